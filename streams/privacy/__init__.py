"""Privacy and audit integrity, as pure functions over batches.

* ``keys`` — the privacy key (from a file or the environment, never a settings file),
  its id, the purpose keys derived from it, and the retired keys of past rotations;
* ``pseudonym`` — keyed HMAC-SHA256 pseudonyms of entity identifiers, one per distinct
  value per batch, and the identifier columns each output carries;
* ``crypto`` — AES-256-GCM envelopes of dead-letter payloads;
* ``chain`` — the per-batch hash chain of audit records; ``verify`` — walking it;
* ``erase`` — what erasing one entity touches, and the audit tombstone it leaves;
* ``edge`` — the tools above built once from the settings, for the composition root.

Nothing here does IO (but ``bench``, the measurement script of the README's figures):
the scoring loop, the evaluator and the CLI apply these at their edges (see
``streams.scoring.pipeline``, ``streams.cli.privacy``).
"""
