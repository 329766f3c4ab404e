"""ms-swift glue: the classes our entry modules register (importable, hence picklable)."""
