"""Study input: the level vocabulary, challenge file formats and patient loaders."""
