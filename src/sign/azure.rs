//! Azure Blob Storage signing (SharedKey and service SAS).
