"""The gateway's boundary to Ansible Semaphore: start the post-provisioning task, read it, wait for it.

`model` (task statuses, the task as read) and `errors` load no HTTP client; `client` is the adapter.
Import from the module you need, so importing the model never loads the adapter."""
