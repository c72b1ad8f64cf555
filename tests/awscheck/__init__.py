"""Checks of AWS requests against what AWS accepts: botocore's input shapes and documented
limits (``limits``), and IAM policies of the synthesized template (``iam``)."""
