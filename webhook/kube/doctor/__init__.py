"""``webhook doctor``: the coverage gaps of a live installation, each with what it means and its fix.

``configurations`` checks our webhook configurations, ``namespaces`` what they leave out,
``switches`` who can switch the guard off (with ``webhook/kube/rbac.py``), ``availability``
the Service's endpoints, ``drift`` what runs that the policy would deny; ``run`` puts them
together and prints; ``command`` is the sub-command's parser and handler.
"""
