"""twin-tf serving: TF Serving deployment files, the gRPC/REST client, a development server."""
