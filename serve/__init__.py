"""The Ray Serve application: query encoder, discriminator and retrieval over HTTP (see serve/README.md)."""
