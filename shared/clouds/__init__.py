"""Clouds as Boreas reaches them: apache-libcloud drivers, and the built-in simulated cloud."""
