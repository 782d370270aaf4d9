"""The system lab: the Debian package and the Ansible role on a Debian 12 VM with systemd."""
