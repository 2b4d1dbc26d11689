"""Moving data: sources, targets, storage, the archive format, pipelines and the worker."""
