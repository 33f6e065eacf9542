"""The engine every method runs on: the compiled `Step` contract, the `Runner` that streams
batches through it (padding, sharding over every device, prefetch), the finiteness rule, and
progress reporting. Imports nothing else from fastfem."""
