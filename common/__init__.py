"""The bottom floor: helpers every package may import (files, checksums, traced networks, provenance); it imports none of them."""
