"""What a served model needs: the MLflow pyfunc and `predict`. Imports only the core."""
