"""The machine a run uses: the compute device and CPU threads (``device``), and the BLAS that multiplies
the fully connected layers (``blas``)."""
