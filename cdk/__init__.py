"""The codetune CDK app: a thin stack (`stack.py`) wiring one construct per unit (`constructs/`)."""
