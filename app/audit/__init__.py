"""The audit log: every routing decision, the reviewers' corrections, redaction of personal data, retention."""
