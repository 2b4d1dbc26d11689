"""The archive format: one tar per snapshot (`format`), its compression (`codec`), how items
are counted (`items`) and its encryption and signatures (`crypto`)."""
