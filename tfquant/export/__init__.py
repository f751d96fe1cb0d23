"""tfquant.export: FakeQuant graph -> TFLite flatbuffer, what it holds, and whether it is right."""
from tfquant.export.converter import to_tflite
from tfquant.export.inspector import ModelReport, OpInfo, TensorInfo, inspect
from tfquant.export.interpreter import TFLiteRunner, latencies_ms
from tfquant.export.verify import Fidelity, VerificationResult, sqnr_db, verify
