"""The seed's architecture and members as torch modules: build, load, save, count; device, threads, GGUF import.

Imports core, store and data (a member's architecture is the seed's, its vocabulary the study tokenizer's).
"""
