"""The model registry: signed, versioned artifacts and the manifests that announce them on Kafka."""
