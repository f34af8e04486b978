import NetBackend
