"""Online drift detection: PSI per feature and ADWIN, incidents with hysteresis, the HTML
report and the detection-quality bench."""
