"""attnlens: see what CNN plug-in blocks (ACmix, GC, CA, SPD, DCN) attend to.

Areas, with data flowing one way (nothing imports ``server``):
``server`` -> ``analysis`` -> ``models`` -> ``blocks``; ``training`` -> ``models``, ``blocks``; ``cli`` on top.
"""
__version__ = "0.1.0"
