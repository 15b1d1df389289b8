"""Plain functions shared across roles: returns, masks, seeding, tensor helpers."""
