"""Workflow specifications: YAML in, a validated, hashed model out.

``parser`` reads a document (``yamlplain`` fast, ``yamlsafe`` with limits; ``dialect`` turns a
seed document into a native one first) into the ``model``; ``graph`` checks ids, needs and
cycles; ``templates`` evaluates ``{{ }}`` after parsing; ``cache`` keeps parsed specs by hash.
"""
