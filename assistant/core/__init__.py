"""The one core every front end talks to: a typed `Request` in, a stream of events out
that ends in exactly one `Finished` (a result or an error). Numpy-free, so front ends
and the service process never load the engine's dependencies."""
