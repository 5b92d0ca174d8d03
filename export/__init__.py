"""Convert face networks from the formats people download to ONNX + a JSON spec."""
