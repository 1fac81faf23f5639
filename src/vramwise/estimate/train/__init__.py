"""Training memory in accurate mode: model states, activations, loss, optimizer step, per GPU and phase."""
