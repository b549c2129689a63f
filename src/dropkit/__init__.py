"""dropkit: structured and rule-based dropout regularizers for deep networks, and a lab that compares them."""
from dropkit.registry import MethodCard, create, get_card, methods, register
from dropkit.base import DropkitModule
