"""INT8 calibration: calibration windows of real motion (:mod:`.windows`), explicit Q/DQ
quantisation and per-node sensitivity (:mod:`.quantize`), the accuracy gate (:mod:`.gate`) and
the whole build (:func:`posert.calibration.build.build_int8`)."""
