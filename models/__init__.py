"""Shipped router bundles (data only). ``DEFAULT`` names the router used without --router."""
