"""Example third-party vidbench method (see vidbench_maxpool.method and the README's 'Add a method')."""
