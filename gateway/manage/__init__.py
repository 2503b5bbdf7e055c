"""The management services: organizations, members, roles, policy lines, API keys, service accounts, audit.

The admin API and the CLI both call these functions, so they cannot disagree. Each runs in the caller's
transaction, writes its audit event in that same transaction, and bumps the state version when it changes what
the hot path caches. Authorization happens before (the admin API's enforcer check); an `Actor` carries the
caller's identity and, for the few checks that depend on the request body (granting `owner`), a way to ask the
same enforcer.
"""
