"""Example P-Mode files (1.15 and 2.0 partners, Peppol, SDK) and their development PKI."""
