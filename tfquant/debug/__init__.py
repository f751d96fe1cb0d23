"""tfquant.debug: find the layers that hurt, and fix them (white paper, section 3.7).

    d = tfquant.debug.diagnose(result_or_qat_model, x_val)
    print(d.summary()); d.write_report("report/")
    mp = tfquant.debug.mixed_precision(ptq_result, x_val, target_agreement=0.98)   # fewest float tensors
"""
from tfquant.debug.diagnose import Diagnosis, LayerSensitivity, Suspect, TensorStats, diagnose
from tfquant.debug.mixed_precision import MixedPrecisionResult, mixed_precision
from tfquant.debug.subjects import PTQSubject, QATSubject, subject_of

__all__ = ["diagnose", "Diagnosis", "LayerSensitivity", "Suspect", "TensorStats", "subject_of",
           "PTQSubject", "QATSubject", "mixed_precision", "MixedPrecisionResult"]
