"""The control plane: Pipecat Cloud's public and private APIs over pools of instances."""
