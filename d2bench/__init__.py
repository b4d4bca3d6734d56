"""d2bench: reproduce and extend the D²Conv3D ablation study (WACV 2022).

Importing the package is cheap: the operators, layers and models pull in torch only when used.
"""

__version__ = "0.1.0"
