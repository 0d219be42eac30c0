"""The shared base of every component.

Settings, errors, Kafka client configuration and topics, the one topic reader, the local broker.
"""
