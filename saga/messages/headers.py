"""Kafka record header names: the one place they are spelled.

Messages use CloudEvents 1.0 in Kafka *binary* content mode: each context
attribute is a header named ``ce_<attribute>``, the record value is the payload
(JSON) and ``content-type`` describes it. Saga extensions are CloudEvents
extension attributes (lower-case alphanumerics only, as the spec requires).
Trace context travels in the W3C ``traceparent`` / ``tracestate`` headers.
"""

from __future__ import annotations

from typing import Final

# CloudEvents required context attributes.
ID: Final = "ce_id"
SOURCE: Final = "ce_source"
SPECVERSION: Final = "ce_specversion"
TYPE: Final = "ce_type"
# CloudEvents optional context attributes.
TIME: Final = "ce_time"
SUBJECT: Final = "ce_subject"
DATASCHEMA: Final = "ce_dataschema"
CONTENT_TYPE: Final = "content-type"

# Saga extension attributes.
SAGA_ID: Final = "ce_sagaid"
SAGA_TYPE: Final = "ce_sagatype"
SAGA_STEP: Final = "ce_sagastep"
CAUSATION_ID: Final = "ce_causationid"
ATTEMPT: Final = "ce_attempt"
SCHEMA_VERSION: Final = "ce_schemaversion"

# Message signatures (see saga.security.signing).
SIGNATURE: Final = "ce_signature"
SIGNATURE_KEY_ID: Final = "ce_signaturekeyid"
SIGNATURE_ALGORITHM: Final = "ce_signaturealg"
#: Fresh per send and signed: a re-send by the publisher differs from a copied record.
SIGNATURE_NONCE: Final = "ce_signaturenonce"

# W3C trace context.
TRACEPARENT: Final = "traceparent"
TRACESTATE: Final = "tracestate"

# Added to a record when it is dead-lettered; the original headers are kept.
DLQ_REASON: Final = "dlq_reason"
DLQ_ERROR_TYPE: Final = "dlq_error_type"
DLQ_TOPIC: Final = "dlq_topic"
DLQ_PARTITION: Final = "dlq_partition"
DLQ_OFFSET: Final = "dlq_offset"
DLQ_GROUP: Final = "dlq_group"
DLQ_TIME: Final = "dlq_time"
#: The original signature of a dead-lettered record (the dead letter is signed anew).
DLQ_SIGNATURE: Final = "dlq_signature"
DLQ_SIGNATURE_KEY_ID: Final = "dlq_signaturekeyid"
DLQ_SIGNATURE_ALGORITHM: Final = "dlq_signaturealg"
DLQ_SIGNATURE_NONCE: Final = "dlq_signaturenonce"
#: Set when a dead letter had to leave out the original value to fit the size limit.
DLQ_VALUE_OMITTED: Final = "dlq_value_omitted"

SPECVERSION_VALUE: Final = "1.0"
JSON_CONTENT_TYPE: Final = "application/json"

#: Headers every enveloped record must carry; a record without one is dead-lettered.
REQUIRED: Final = (ID, SOURCE, SPECVERSION, TYPE, TIME, SAGA_ID, SCHEMA_VERSION)
