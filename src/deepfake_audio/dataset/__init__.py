"""The versioned dataset (`data/spectrograms/`): the shard format, writer and reader, and
the training batches made from it.

Pure: no MLflow, keras-tuner or DVC; TensorFlow only inside the functions that hand tf.data
pipelines to a fit.
"""
