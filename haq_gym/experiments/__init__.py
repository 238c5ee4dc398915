"""Experiments built from haq-gym commands: the end-to-end benchmark (search -> finetune -> test) and its statistics."""
