"""The gateway's own HTTP API (/auth, /healthz, /readyz): Litestar controllers; never imports proxy internals."""
