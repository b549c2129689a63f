"""Published recipes reproduced with dropkit's parts: the dental-imaging edge pipeline and its MLP (``dental``)."""
