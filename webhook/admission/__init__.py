"""The AdmissionReview protocol and the decisions made on it; nothing here knows HTTP."""
