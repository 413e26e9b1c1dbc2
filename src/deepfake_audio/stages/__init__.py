"""The DVC stages: each wires the core to files and to MLflow, one module per stage."""
