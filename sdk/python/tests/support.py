"""Shared by the SDK's tests: sys.path to the SDK's source, the repository's protocol/ dir."""
import os
import sys

SDK_DIR = os.path.abspath(os.path.join(os.path.dirname(__file__), '..'))
REPO_DIR = os.path.abspath(os.path.join(SDK_DIR, '..', '..'))
PROTOCOL_DIR = os.path.join(REPO_DIR, 'protocol')
if SDK_DIR not in sys.path:
    sys.path.insert(0, SDK_DIR)
