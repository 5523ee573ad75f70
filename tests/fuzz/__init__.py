"""Coverage-guided fuzzers for everything that reads untrusted bytes (see README.md in this folder)."""
