"""What both planes need, below both: authenticating a credential, asking for a decision, the client-address
rule, request ids and the audit event. Imported by gateway.proxy and gateway.api; imports neither."""
