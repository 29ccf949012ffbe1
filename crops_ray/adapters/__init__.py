"""Adapters that turn public test collections and logs into the data contract's layout."""
