"""Who the caller is: password hashing, access/refresh tokens and signing keys, outside issuers' tokens and keys."""
