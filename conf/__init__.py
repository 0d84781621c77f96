"""The configuration of the cellsearch command (Hydra config groups, one folder each), installed as the
package ``cellsearch.conf`` so that the command finds it as ``pkg://cellsearch.conf`` outside a clone."""
