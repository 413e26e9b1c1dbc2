"""Operations: MLflow tracking helpers, the local tracking server, the runtime (devices)."""
