raise ImportError("no module named totally_missing_dependency")
