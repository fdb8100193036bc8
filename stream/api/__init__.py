"""The public Python API's implementation; import it from `stream` (`stream.analyze`, ...)."""
