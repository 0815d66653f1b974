"""Pure receiver logic: the AE-title allow-list, instance checks, study assembly."""
