"""The MQTT face of the service: topics, request parsing, the paho bridge, discovery."""
